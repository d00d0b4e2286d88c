//! The identity a peer's certificate names: its one URI SAN, read from arbitrary DER.
//!
//! Both readers must agree: a certificate with an identity lists exactly that ID.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_api::spiffe::{id_in_certificate, ids_in_certificate};

fuzz_target!(|der: &[u8]| {
    let all = ids_in_certificate(der);
    match id_in_certificate(der) {
        Ok(id) => assert_eq!(all, [id]),
        Err(reason) => {
            let _ = reason.to_string();
        }
    }
});
