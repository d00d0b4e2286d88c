use std::collections::BTreeMap;

use super::*;
use crate::config::{ConfigFiles, MESH_FILE, parse};

fn config(mesh: &str, services: &[&str]) -> MeshConfig {
    let mut files = ConfigFiles::new();
    files.insert(MESH_FILE.into(), mesh.as_bytes().to_vec());
    for text in services {
        let name = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("name: "))
            .unwrap();
        files.insert(format!("services/{name}.yaml"), text.as_bytes().to_vec());
    }
    parse(&files).unwrap()
}

const MESH: &str = "trust_domain: mesh.local\n";

/// Assigns from the table in `dir`, opened afresh as at a start, and returns what each
/// service got.
fn assign(dir: &Path, mut config: MeshConfig) -> BTreeMap<String, IpAddr> {
    let mut table = AddressTable::open(dir).unwrap();
    table.assign(&mut config).unwrap();
    config
        .services
        .values()
        .map(|s| (s.name.clone(), s.virtual_address.unwrap()))
        .collect()
}

#[test]
fn every_service_gets_a_distinct_address_in_the_default_range() {
    let dir = tempfile::tempdir().unwrap();
    let got = assign(
        dir.path(),
        config(MESH, &["name: a\n", "name: b\n", "name: c\n"]),
    );
    assert_eq!(got.len(), 3);
    let distinct: BTreeSet<IpAddr> = got.values().copied().collect();
    assert_eq!(distinct.len(), 3);
    for ip in got.values() {
        assert!(crate::config::DEFAULT_RANGE.usable(*ip), "{ip}");
        assert_ne!(*ip, IpAddr::from([127, 0, 0, 1]));
    }
    let written = std::fs::read_to_string(dir.path().join(TABLE_FILE)).unwrap();
    assert!(written.contains(&format!("a {}\n", got["a"])), "{written}");
}

#[test]
fn addresses_survive_a_restart_and_services_coming_and_going() {
    let dir = tempfile::tempdir().unwrap();
    let first = assign(dir.path(), config(MESH, &["name: a\n", "name: b\n"]));
    // A restart with the same services reads the same table.
    assert_eq!(
        assign(dir.path(), config(MESH, &["name: a\n", "name: b\n"])),
        first
    );
    // Another service arrives: the others keep theirs.
    let added = assign(
        dir.path(),
        config(MESH, &["name: a\n", "name: b\n", "name: c\n"]),
    );
    assert_eq!(added["a"], first["a"]);
    assert_eq!(added["b"], first["b"]);
    // One leaves and comes back: it gets its old address again.
    let removed = assign(dir.path(), config(MESH, &["name: a\n", "name: c\n"]));
    assert_eq!(removed["a"], first["a"]);
    assert_eq!(removed["c"], added["c"]);
    let back = assign(
        dir.path(),
        config(MESH, &["name: a\n", "name: b\n", "name: c\n"]),
    );
    assert_eq!(back, added);
}

#[test]
fn a_pinned_address_is_kept_and_an_allocation_moves_out_of_its_way() {
    let dir = tempfile::tempdir().unwrap();
    let first = assign(dir.path(), config(MESH, &["name: a\n"]));
    let pin = first["a"];
    // b pins the address a was given: the pin wins, and a moves once, for good.
    let pinned = assign(
        dir.path(),
        config(
            MESH,
            &["name: a\n", &format!("name: b\nvirtual_address: {pin}\n")],
        ),
    );
    assert_eq!(pinned["b"], pin);
    assert_ne!(pinned["a"], pin);
    let again = assign(
        dir.path(),
        config(
            MESH,
            &["name: a\n", &format!("name: b\nvirtual_address: {pin}\n")],
        ),
    );
    assert_eq!(again, pinned);
}

#[test]
fn a_removed_services_address_is_reused_only_when_nothing_else_is_free() {
    let dir = tempfile::tempdir().unwrap();
    // 127.240.0.0/30 has two usable addresses: .1 and .2.
    let mesh = "trust_domain: mesh.local\nvirtual_addresses: { range: 127.240.0.0/30 }\n";
    let first = assign(dir.path(), config(mesh, &["name: a\n", "name: b\n"]));
    let b = first["b"];
    let replaced = assign(dir.path(), config(mesh, &["name: a\n", "name: c\n"]));
    assert_eq!(replaced["a"], first["a"]);
    assert_eq!(replaced["c"], b);
    let table = std::fs::read_to_string(dir.path().join(TABLE_FILE)).unwrap();
    assert!(!table.contains("\nb "), "{table}");
}

#[test]
fn a_malformed_table_is_an_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(TABLE_FILE), "a 127.240.0.1\nb nonsense\n").unwrap();
    let err = AddressTable::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("virtual-addresses: line 2"), "{err}");
}

#[test]
fn probing_is_bounded_and_finds_the_last_free_address() {
    let range: Cidr = "127.240.0.0/29".parse().unwrap();
    let only = IpAddr::from([127, 240, 0, 6]);
    assert_eq!(probe(range, "x", |ip| ip == only), Some(only));
    assert_eq!(probe(range, "x", |_| false), None);
}
