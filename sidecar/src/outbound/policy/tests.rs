use mesh_control_plane::ca::{DEFAULT_LEAF_LIFETIME, DevCa};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::*;
use crate::identity::Credentials;

/// The calling sidecar's identity, from a CA made for the test.
fn identity() -> Identity {
    let ca = DevCa::generate("mesh.local").unwrap();
    let leaf = ca
        .issue_service("default", "orders", DEFAULT_LEAF_LIFETIME)
        .unwrap();
    let id: SpiffeId = ca.spiffe_id("default", "orders").unwrap().parse().unwrap();
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let roots = CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    Identity::new(Credentials::from_parts(&id, chain, key, roots).unwrap()).unwrap()
}

fn spec(
    name: &str,
    virtual_address: Option<&str>,
    endpoints: &[&str],
) -> (String, DestinationSpec) {
    let spec = DestinationSpec {
        identity: format!("spiffe://mesh.local/ns/default/sa/{name}")
            .parse()
            .unwrap(),
        policy: DestinationPolicy::default(),
        backends: vec![BackendSpec {
            version: String::new(),
            weight: 1,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        }],
        tcp: None,
        virtual_address: virtual_address.map(|ip| ip.parse().unwrap()),
        opaque_ports: Vec::new(),
    };
    (name.to_owned(), spec)
}

fn table(specs: Vec<(String, DestinationSpec)>) -> Destinations {
    let identity = identity();
    let metrics = Metrics::new();
    let cx = BuildContext {
        identity: &identity,
        connect_timeout: Duration::from_secs(1),
        metrics: &metrics,
    };
    Destinations::build(specs, &cx, None).unwrap()
}

fn lookup(table: &Destinations, addr: &str) -> Option<String> {
    let (name, stack) = table.by_address(addr.parse().unwrap())?;
    assert_eq!(
        stack.name.as_str(),
        name,
        "the stack is the named destination's"
    );
    Some(name.to_owned())
}

#[test]
fn a_virtual_address_finds_its_destination_on_any_port() {
    let table = table(vec![
        spec("inventory", Some("127.240.0.10"), &["127.0.0.1:4001"]),
        spec("payments", Some("127.240.0.11"), &["127.0.0.1:4002"]),
    ]);
    assert_eq!(
        lookup(&table, "127.240.0.10:80").as_deref(),
        Some("inventory")
    );
    assert_eq!(
        lookup(&table, "127.240.0.10:8080").as_deref(),
        Some("inventory")
    );
    assert_eq!(
        lookup(&table, "127.240.0.11:80").as_deref(),
        Some("payments")
    );
    // The IPv4-mapped form of a virtual address is the same address.
    assert_eq!(
        lookup(&table, "[::ffff:127.240.0.11]:80").as_deref(),
        Some("payments")
    );
    assert_eq!(lookup(&table, "127.240.0.12:80"), None);
}

#[test]
fn an_endpoint_address_finds_its_destination_on_its_port_only() {
    let table = table(vec![
        spec("inventory", None, &["127.0.0.1:4001", "127.0.0.2:4001"]),
        spec("payments", Some("127.240.0.11"), &["127.0.0.1:4002"]),
    ]);
    assert_eq!(
        lookup(&table, "127.0.0.2:4001").as_deref(),
        Some("inventory")
    );
    assert_eq!(
        lookup(&table, "127.0.0.1:4002").as_deref(),
        Some("payments")
    );
    assert_eq!(lookup(&table, "127.0.0.1:4003"), None);
}

#[test]
fn a_virtual_address_comes_before_an_endpoint_and_a_shared_endpoint_goes_to_the_first_name() {
    let table = table(vec![
        spec("b-service", None, &["127.0.0.1:4001"]),
        spec("a-service", None, &["127.0.0.1:4001"]),
        spec("c-service", Some("127.0.0.1"), &["127.0.0.9:4001"]),
    ]);
    // 127.0.0.1 is c's virtual address: any port there is c, an endpoint of a and b or not.
    assert_eq!(
        lookup(&table, "127.0.0.1:4001").as_deref(),
        Some("c-service")
    );
    let table = super::Destinations::build(
        vec![
            spec("b-service", None, &["127.0.0.1:4001"]),
            spec("a-service", None, &["127.0.0.1:4001"]),
        ],
        &BuildContext {
            identity: &identity(),
            connect_timeout: Duration::from_secs(1),
            metrics: &Metrics::new(),
        },
        None,
    )
    .unwrap();
    assert_eq!(
        lookup(&table, "127.0.0.1:4001").as_deref(),
        Some("a-service")
    );
}

#[test]
fn a_new_table_indexes_its_own_addresses() {
    let identity = identity();
    let metrics = Metrics::new();
    let cx = BuildContext {
        identity: &identity,
        connect_timeout: Duration::from_secs(1),
        metrics: &metrics,
    };
    let old = Destinations::build(
        vec![spec("inventory", Some("127.240.0.10"), &["127.0.0.1:4001"])],
        &cx,
        None,
    )
    .unwrap();
    let new = Destinations::build(
        vec![spec("inventory", Some("127.240.0.20"), &["127.0.0.1:4005"])],
        &cx,
        Some(&old),
    )
    .unwrap();
    assert_eq!(
        lookup(&new, "127.240.0.20:80").as_deref(),
        Some("inventory")
    );
    assert_eq!(lookup(&new, "127.240.0.10:80"), None);
    assert_eq!(lookup(&new, "127.0.0.1:4001"), None);
    assert_eq!(lookup(&new, "127.0.0.1:4005").as_deref(), Some("inventory"));
}

#[test]
fn opaque_ports_skip_detection_and_other_ports_do_not() {
    let (name, mut cache) = spec("cache", Some("127.240.0.20"), &["127.0.0.1:16006"]);
    cache.opaque_ports = vec![6379];
    let table = table(vec![(name, cache)]);
    let (_, stack) = table
        .by_address("127.240.0.20:6379".parse().unwrap())
        .unwrap();
    assert!(stack.skips_detection(6379), "the opaque port");
    assert!(
        !stack.skips_detection(80),
        "another port of the same address"
    );
}
