//! A snapshot from the control plane: protobuf bytes decoded with prost, then checked,
//! converted into the sidecar's destinations, policies and trust, and put in force, as the
//! control-plane client does with each one it receives.
//!
//! Each input is applied to a fresh sidecar, so a crash reproduces from its input alone. A
//! rejection says why; nothing panics.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mesh_api::proto::v1;
use mesh_control_plane::ca::{DEFAULT_LEAF_LIFETIME, DevCa};
use mesh_sidecar::config::Config;
use mesh_sidecar::fuzzing::SnapshotTarget;
use mesh_sidecar::identity::{Credentials, Identity, SpiffeId};
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::runtime::Runtime;

/// A sidecar of `orders` enrolled with a control plane, as the snapshot finds it.
const BOOTSTRAP: &str = "
service: orders
trust_domain: mesh.local
app: 127.0.0.1:8080
control_plane:
  address: 127.0.0.1:15010
  trust_anchor: ca.pem
  token_file: token
";

struct Sidecar {
    runtime: Runtime,
    config: Config,
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
}

fn sidecar() -> &'static Sidecar {
    static SIDECAR: OnceLock<Sidecar> = OnceLock::new();
    SIDECAR.get_or_init(|| {
        let ca = DevCa::generate("mesh.local").unwrap();
        let leaf = ca
            .issue_service("default", "orders", DEFAULT_LEAF_LIFETIME)
            .unwrap();
        Sidecar {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap(),
            config: Config::from_yaml(BOOTSTRAP, Path::new("/nonexistent")).unwrap(),
            id: ca.spiffe_id("default", "orders").unwrap().parse().unwrap(),
            chain: CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap(),
            key: PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            roots: CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
                .collect::<Result<_, _>>()
                .unwrap(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = v1::Snapshot::decode(data) else {
        return;
    };
    let sidecar = sidecar();
    let _runtime = sidecar.runtime.enter();
    let credentials = Credentials::from_parts(
        &sidecar.id,
        sidecar.chain.clone(),
        sidecar.key.clone_key(),
        sidecar.roots.clone(),
    )
    .unwrap();
    let target = SnapshotTarget::new(&sidecar.config, Identity::new(credentials).unwrap());
    if let Err(why) = target.apply(&snapshot) {
        assert!(!why.is_empty(), "a rejection says why");
    }
});
