//! SPIFFE IDs as text: what `authorization` lists, snapshots and certificates carry.
//!
//! An ID that parses prints as given, and its parts are read without panicking; a service ID
//! built from its parts parses back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_api::spiffe::{self, SpiffeId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = spiffe::check_label(text);
    let _ = spiffe::check_trust_domain(text);
    let Ok(id) = text.parse::<SpiffeId>() else {
        return;
    };
    assert_eq!(id.as_str(), text);
    assert_eq!(id.to_string(), text);
    let domain = id.trust_domain();
    assert!(spiffe::check_trust_domain(domain).is_ok(), "{domain:?}");
    if let Some(service) = id.service() {
        assert!(!service.is_empty());
        if spiffe::check_label(service).is_ok() {
            let rebuilt = spiffe::format_service_id(domain, "default", service);
            assert!(rebuilt.parse::<SpiffeId>().is_ok(), "{rebuilt:?}");
        }
    }
});
