//! Writes the seed inputs that are made rather than written by hand: certificates and CSRs
//! (DER), and snapshots (protobuf) built from the `mesh_config` seeds as the control plane
//! builds them. Run from `fuzz/`: `cargo run --example seeds`; the files are committed.

use std::fs;
use std::path::{Path, PathBuf};

use mesh_api::proto::v1;
use mesh_control_plane::ca::DevCa;
use mesh_control_plane::config::{self, ConfigFiles, MESH_FILE, SERVICES_DIR};
use prost::Message;
use rcgen::{CertificateParams, IsCa, KeyPair, SanType};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const ORDERS: &str = "spiffe://mesh.local/ns/default/sa/orders";

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    certificates(&corpus.join("certificate_san"));
    requests(&corpus.join("csr"));
    snapshots(&corpus);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn params(uris: &[&str], dns: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
    params
        .subject_alt_names
        .extend(uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())));
    params
}

fn certificates(dir: &Path) {
    let key = KeyPair::generate().unwrap();
    let cases: [(&str, &[&str], &[&str]); 5] = [
        ("one-spiffe-uri", &[ORDERS], &[]),
        ("no-san", &[], &[]),
        ("dns-only", &[], &["orders.mesh.local"]),
        (
            "two-uris",
            &[ORDERS, "spiffe://mesh.local/ns/default/sa/admin"],
            &[],
        ),
        (
            "https-uri",
            &["https://orders.example/"],
            &["orders.example"],
        ),
    ];
    for (name, uris, dns) in cases {
        let der = params(uris, dns).self_signed(&key).unwrap().der().to_vec();
        write(dir, name, &der);
        if name == "one-spiffe-uri" {
            write(dir, "truncated", &der[..der.len() / 2]);
        }
    }
    let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let der = params(&[ORDERS], &[]).self_signed(&ed25519).unwrap();
    write(dir, "ed25519", der.der());
}

fn requests(dir: &Path) {
    let key = KeyPair::generate().unwrap();
    let der = |params: CertificateParams, key: &KeyPair| {
        params.serialize_request(key).unwrap().der().to_vec()
    };
    write(dir, "allowed", &der(params(&[ORDERS], &[]), &key));
    write(dir, "no-name", &der(params(&[], &[]), &key));
    write(
        dir,
        "other-service",
        &der(
            params(&["spiffe://mesh.local/ns/default/sa/admin"], &[]),
            &key,
        ),
    );
    write(dir, "extra-dns", &der(params(&[ORDERS], &["orders"]), &key));
    let mut ca = params(&[ORDERS], &[]);
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    write(dir, "asks-to-be-a-ca", &der(ca, &key));
    let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    write(dir, "ed25519", &der(params(&[ORDERS], &[]), &ed25519));
    let allowed = der(params(&[ORDERS], &[]), &key);
    let mut bad_signature = allowed.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    write(dir, "bad-signature", &bad_signature);
    write(dir, "truncated", &allowed[..allowed.len() / 2]);
}

/// One snapshot per service of each valid `mesh_config` seed, with every destination at two
/// loopback endpoints and this CA's root as the trust bundle.
fn snapshots(corpus: &Path) {
    let ca = DevCa::generate("mesh.local").unwrap();
    let root: Vec<u8> = CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    let mut seeds: Vec<PathBuf> = fs::read_dir(corpus.join("mesh_config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    let dir = corpus.join("snapshot");
    for seed in seeds {
        let mut files = ConfigFiles::new();
        let bytes = fs::read(&seed).unwrap();
        for (i, contents) in bytes.split(|&b| b == 0).enumerate() {
            let name = match i {
                0 => MESH_FILE.to_owned(),
                n => format!("{SERVICES_DIR}/s{n}.yaml"),
            };
            files.insert(name, contents.to_vec());
        }
        let mesh = match config::parse(&files) {
            Ok(mesh) => mesh,
            Err(e) => {
                eprintln!(
                    "{}: not a valid configuration, no snapshot: {e}",
                    seed.display()
                );
                continue;
            }
        };
        let seed_name = seed.file_name().unwrap().to_string_lossy().into_owned();
        for (name, svc) in &mesh.services {
            let destinations = svc
                .calls
                .iter()
                .filter_map(|called| mesh.services.get(called))
                .enumerate()
                .map(|(i, dest)| {
                    let port = 16000 + 10 * u16::try_from(i).unwrap();
                    v1::Destination {
                        name: dest.name.clone(),
                        identity: mesh_api::spiffe::format_service_id(
                            &mesh.trust_domain,
                            &mesh.namespace,
                            &dest.name,
                        ),
                        policy: Some(v1::Policy::from(&dest.policy)),
                        backends: vec![v1::Backend {
                            version: "v1".into(),
                            weight: 1,
                            endpoints: [port, port + 1]
                                .map(|p| v1::Endpoint {
                                    address: format!("127.0.0.1:{p}"),
                                    instance_id: format!("{}-{p}", dest.name),
                                })
                                .into(),
                        }],
                        tcp: dest.tcp.as_ref().map(v1::TcpDestination::from),
                        ..v1::Destination::default()
                    }
                })
                .collect();
            let snapshot = v1::Snapshot {
                version: 1,
                trust_bundle_der: vec![root.clone()],
                issuer_sha256: mesh_control_plane::ca::sha256_hex(&root),
                authorization: Some(v1::Authorization::from(&svc.authorization)),
                rate_limit: (!svc.rate_limit.is_empty())
                    .then(|| v1::RateLimit::from(&svc.rate_limit)),
                destinations,
                certificate_lifetime_secs: mesh.certificate_lifetime.as_secs(),
                gateway: None,
            };
            write(
                &dir,
                &format!("{seed_name}-{name}"),
                &snapshot.encode_to_vec(),
            );
        }
    }
    write(&dir, "empty", &v1::Snapshot::default().encode_to_vec());
}
