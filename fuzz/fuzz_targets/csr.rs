//! The control plane's CA signing a DER certificate signing request, as a sidecar sends it.
//!
//! Arbitrary DER is refused with an error; a request that is signed yields a certificate that
//! names exactly the identity allowed, whatever else the request asked for.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mesh_control_plane::ca::Authority;

const ALLOWED: &str = "spiffe://mesh.local/ns/default/sa/orders";

fn authority() -> &'static Authority {
    static CA: OnceLock<Authority> = OnceLock::new();
    CA.get_or_init(|| {
        // Signing needs only what `open` loaded; the directory goes once it has.
        let dir = tempfile::tempdir().unwrap();
        Authority::open(&dir.path().join("ca"), "mesh.local").unwrap()
    })
}

fuzz_target!(|csr_der: &[u8]| {
    match authority().sign_csr_der(csr_der, ALLOWED, Duration::from_secs(3600)) {
        Ok(issued) => {
            let leaf = issued
                .chain_der
                .first()
                .expect("a chain starts with the leaf");
            let id = mesh_api::spiffe::id_in_certificate(leaf).expect("the leaf names an identity");
            assert_eq!(id.as_str(), ALLOWED);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
